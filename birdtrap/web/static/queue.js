/* The review queue: keyboard flow, bulk confirm of a selection, undo (issue 18). Plain JS. */
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll("#queue > li"));
  var status = document.getElementById("queue-status");
  var tokenInput = document.getElementById("token");
  var undoButton = document.getElementById("undo");
  var bulkButton = document.getElementById("confirm-selected");
  var names = document.getElementById("names");
  var current = 0;
  var done = [];  // each entry: [{card, review}], newest last; undo takes back the last entry whole
  tokenInput.value = birdtrap.token();
  tokenInput.addEventListener("change", function () { birdtrap.setToken(tokenInput.value); });

  function say(text, error) { status.className = error ? "error" : ""; status.textContent = text; }
  function focus(index) {
    if (!cards.length) return;
    current = Math.max(0, Math.min(cards.length - 1, index));
    cards.forEach(function (card, i) { card.classList.toggle("current", i === current); });
    cards[current].scrollIntoView({block: "nearest"});
  }
  function nextOpen(from) {
    for (var i = from + 1; i < cards.length; i++) if (!cards[i].classList.contains("done")) return i;
    return from;
  }
  function mark(card, review) {
    card.classList.add("done");
    card.dataset.review = review.id;
    var pick = card.querySelector(".pick");
    pick.checked = false;
    card.querySelector(".outcome").textContent = birdtrap.word(review.verdict) + (review.verdict === "corrected" ? ": " + review.label : "");
    card.querySelector(".correct-form").hidden = true;
  }
  function unmark(card) {
    card.classList.remove("done");
    delete card.dataset.review;
    card.querySelector(".outcome").textContent = "";
  }
  function remember(step) { done.push(step); undoButton.disabled = false; countSelected(); }
  function review(card, body) {
    if (card.classList.contains("done")) { say("Event " + card.dataset.event + " is reviewed already; undo first to change it.", true); return; }
    say("Saving…");
    birdtrap.send("POST", "/api/v1/events/" + card.dataset.event + "/review", body).then(function (answer) {
      mark(card, answer);
      remember([{card: card, review: answer.id}]);
      say("Event " + card.dataset.event + ": " + birdtrap.word(answer.verdict) + (answer.label ? " as " + answer.label : "") + ".");
      focus(nextOpen(cards.indexOf(card)));
    }, function (message) { say(message, true); });
  }
  function startCorrect(card) {
    var form = card.querySelector(".correct-form");
    form.hidden = false;
    form.querySelector("input").focus();
  }
  function undo() {
    var step = done.pop();
    undoButton.disabled = !done.length;
    if (!step) return;
    say("Undoing…");
    var chain = Promise.resolve();
    step.slice().reverse().forEach(function (item) {
      chain = chain.then(function () { return birdtrap.send("DELETE", "/api/v1/reviews/" + item.review); }).then(function () { unmark(item.card); });
    });
    chain.then(function () {
      say("Undone: " + step.length + " review" + (step.length === 1 ? "" : "s") + " taken back.");
      focus(cards.indexOf(step[0].card));
      countSelected();
    }, function (message) { say(message, true); });
  }
  function selected() { return cards.filter(function (c) { return c.querySelector(".pick").checked && !c.classList.contains("done"); }); }
  function countSelected() {
    var n = selected().length;
    document.getElementById("selected-count").textContent = n;
    bulkButton.disabled = n === 0;
  }
  function confirmSelected() {
    var chosen = selected();
    if (!chosen.length) return;
    say("Confirming " + chosen.length + "…");
    var ids = chosen.map(function (c) { return Number(c.dataset.event); });
    birdtrap.send("POST", "/api/v1/reviews", {verdict: "confirm", event_ids: ids}).then(function (answers) {
      var step = answers.map(function (answer, i) { mark(chosen[i], answer); return {card: chosen[i], review: answer.id}; });
      remember(step);
      say("Confirmed " + answers.length + " event" + (answers.length === 1 ? "" : "s") + ".");
    }, function (message) { say(message, true); });
  }

  cards.forEach(function (card, i) {
    card.addEventListener("click", function (event) { if (event.target.tagName !== "A" && event.target.tagName !== "IMG") focus(i); });
    card.querySelector(".pick").addEventListener("change", countSelected);
    card.querySelectorAll("button[data-action]").forEach(function (button) {
      button.addEventListener("click", function () {
        var action = button.dataset.action;
        if (action === "confirm") review(card, {verdict: "confirm"});
        else if (action === "blank") review(card, {verdict: "blank"});
        else startCorrect(card);
      });
    });
    var form = card.querySelector(".correct-form");
    var input = form.querySelector("input");
    birdtrap.autocomplete(input, names);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var species = input.value.trim();
      if (!species) { say("Type the species to correct it to.", true); return; }
      review(card, {verdict: "correct", species: species});
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { form.hidden = true; card.focus(); }
    });
  });
  undoButton.addEventListener("click", undo);
  bulkButton.addEventListener("click", confirmSelected);

  document.addEventListener("keydown", function (event) {
    var tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || event.ctrlKey || event.metaKey || event.altKey) return;
    var card = cards[current];
    var key = event.key;
    if (key === "n" || key === "j") focus(current + 1);
    else if (key === "p" || key === "k") focus(current - 1);
    else if (key === "u") undo();
    else if (!card) return;
    else if (key === "c") { if (card.dataset.kind === "bird") review(card, {verdict: "confirm"}); else say("Event " + card.dataset.event + " shows no bird to confirm: correct it (s) or mark it blank (b).", true); }
    else if (key === "b") review(card, {verdict: "blank"});
    else if (key === "s") startCorrect(card);
    else if (key === "x") { var pick = card.querySelector(".pick"); if (!pick.disabled) { pick.checked = !pick.checked; countSelected(); } }
    else return;
    event.preventDefault();
  });
  focus(0);
})();
