"""The Textual dashboard: `compressor train` on a terminal, and `compressor dashboard RUN_DIR`."""
