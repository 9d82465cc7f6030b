from kalibr.cli import main

main()
