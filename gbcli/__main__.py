from gbcli.cli import main

main()
