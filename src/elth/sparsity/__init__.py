"""Mask algorithms: saliency scores, one-shot and pruning-at-initialisation masks, DST controllers.

The workflows that train with them (IMP, rewind points, ticket training, baseline tickets, DST runs)
live one layer up, in `elth.workflows`; the mask type and its helpers in `elth.masks`.
"""
