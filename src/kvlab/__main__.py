from kvlab.cli.entry import main

main()
