/* Shared by the event page and the review queue: token, API calls, names autocomplete. Plain JS. */
var birdtrap = (function () {
  function token() { return window.localStorage.getItem("birdtrapToken") || ""; }
  function setToken(value) { window.localStorage.setItem("birdtrapToken", value); }
  // Resolves with the JSON answer; rejects with a sentence a person can act on.
  function send(method, url, body) {
    var options = {method: method, headers: {"Authorization": "Bearer " + token()}};
    if (body !== undefined) { options.headers["Content-Type"] = "application/json"; options.body = JSON.stringify(body); }
    return fetch(url, options).then(function (r) {
      return r.json().then(function (answer) {
        if (!r.ok) throw (answer.detail || answer.title || ("HTTP " + r.status));
        return answer;
      }, function () { throw ("The server answered " + r.status + " without details."); });
    }, function () { throw "The server cannot be reached."; });
  }
  function word(verdict) { return verdict === "empty" ? "blank" : verdict; }
  // Fill a <datalist> from GET /api/v1/names as the person types (the server refuses other names).
  function autocomplete(input, list) {
    var asked = "";
    input.addEventListener("input", function () {
      var q = input.value.trim();
      if (q.length < 2 || q === asked || q.toLowerCase().indexOf("other:") === 0) return;
      asked = q;
      fetch("/api/v1/names?limit=15&q=" + encodeURIComponent(q)).then(function (r) { return r.ok ? r.json() : []; }).then(function (names) {
        if (q !== asked) return;
        list.innerHTML = "";
        names.forEach(function (name) {
          var option = document.createElement("option");
          option.value = name.label;
          option.textContent = name.rank;
          list.appendChild(option);
        });
      }).catch(function () {});
    });
  }
  return {token: token, setToken: setToken, send: send, word: word, autocomplete: autocomplete};
})();
