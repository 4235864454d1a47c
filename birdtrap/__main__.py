from birdtrap.cli import main

main()
