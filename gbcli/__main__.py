from gbcli.entry import main

main()
