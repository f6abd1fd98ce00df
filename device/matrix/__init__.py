"""The Matrix connector: a wearer's rooms in, their confirmed replies out."""
