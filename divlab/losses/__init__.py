"""Loss transforms built on `divlab.divergences`, one module per family."""
from divlab.losses.reductions import REDUCTIONS
from divlab.losses.reductions import reduce_loss
from divlab.losses import supervised
from divlab.losses.supervised import softmax_cross_entropy
from divlab.losses.supervised import squared_error
from divlab.losses import sequence
from divlab.losses import unlearning
from divlab.losses import preference
from divlab.losses import policy
from divlab.losses import bottleneck
from divlab.losses import distillation
from divlab.losses import diffusion
