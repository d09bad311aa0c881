"""The ``dfstream`` command line: the top layer, which nothing else in the repository imports."""
