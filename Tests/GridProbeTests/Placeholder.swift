// GridProbe tests live beside this file.
