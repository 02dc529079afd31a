from cloudcli.cli import main

main()
