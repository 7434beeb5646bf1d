from thinlink.cli import main

main()
