from kvlab.cli.app import main

main()
