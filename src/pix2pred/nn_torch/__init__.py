"""The torch backend: the numpy backend's layers, models and update rules in PyTorch.

Same names, parameter names and layouts as `pix2pred.nn_numpy` (see ``tests/test_symmetry.py``
for the rule that keeps them twins): `layers` (ops and losses over ``torch.nn.functional``;
autograd does the backward), `models` (``nn.Module`` twins of the numpy models), `optim`
(``torch.optim`` configured as the numpy update rules) and `transfer` (weights both ways).
Only this package imports torch; the numpy backend runs without it.
"""
