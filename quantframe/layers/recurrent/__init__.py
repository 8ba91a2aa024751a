"""Quantized recurrent layers: `QuantRNN` (rnn.py) and `QuantLSTM` (lstm.py) on a shared base.

base.py: torch's arguments, the layer stack, states and state_dict loading; gates in cells.py
(`GateWeight`, `GateParams`) with the per-step cells; steps.py: each cell's timestep, once, and the
gate order; step_quant.py: the per-timestep quantizers; bptt.py: the in-place loops and the
hand-written backward; stats.py: batched statistics collection; cache.py: the eval cache; view.py:
QuantLSTM's stacked `gate_params` view.
"""

from quantframe.layers.recurrent.lstm import QuantLSTM
from quantframe.layers.recurrent.rnn import QuantRNN

__all__ = ["QuantLSTM", "QuantRNN"]
