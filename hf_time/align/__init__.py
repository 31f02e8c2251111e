"""Experts from different inits: permutation alignment (Git Re-Basin), ZipIt! and PLeaS.

Pure tensor functions (:mod:`.spec`, :mod:`.perms`, :mod:`.assign`, :mod:`.weight_matching`) are
separate from the code that reads models and data.
"""
