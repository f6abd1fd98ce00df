"""Speech in and out: audio I/O, text to speech, speech to text, endpointing, commands.

Needs the `voice` extra (`pip install -e '.[voice]'`, which ./setup.sh does);
the rest of Tidings does not import this package.
"""
