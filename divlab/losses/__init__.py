"""Loss transforms built on `divlab.divergences`, one module per family."""
from divlab.losses.reductions import REDUCTIONS
from divlab.losses.reductions import reduce_loss
