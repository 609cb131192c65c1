"""The long-running daemon: loop, bootstrap, signals."""
