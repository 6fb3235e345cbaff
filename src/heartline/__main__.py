from heartline.cli import main

main()
