"""``python -m dfstream ...`` is ``dfstream ...`` (the tests run this checkout's CLI so)."""
from dfstream.cli.main import main

main()
