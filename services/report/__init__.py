"""The report service: the markdown report a prescriber signs, and answers about it."""
