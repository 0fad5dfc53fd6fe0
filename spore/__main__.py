from spore.cli import main

main()
