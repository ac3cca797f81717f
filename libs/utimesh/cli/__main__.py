from utimesh.cli import main

main()
