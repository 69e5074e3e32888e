"""Pure divergence functions: categorical (on logits) and sample-based.

Nothing here knows about training, devices, files or configs.
"""
# pylint: disable=wildcard-import
from divlab.divergences import generators
from divlab.divergences.categorical import *
from divlab.divergences.kernel import *
from divlab.divergences.transport import *
from divlab.divergences.dependence import *
from divlab.divergences.fused import *
