"""The training methods on top of masked video modelling: LayerLock (layerlock.py), blockwise SSL
(blockwise.py) and V-JEPA (vjepa.py). Each module holds its method's loss and its stage rules."""
