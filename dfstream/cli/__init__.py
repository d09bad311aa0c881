"""The click commands: ``main`` holds the ``dfstream`` group, ``run``/``monitor``/``stage``; the other
modules hold the commands of one subsystem each (models, detector, generate, bench)."""
