"""An LSTM autoencoder: the encoder's last hidden state is the latent, repeated over time for the decoder.

It summarises a whole window in `hidden` numbers, which suits streams whose normal shape is a rhythm or a
slow trend rather than something that lives at a fixed position in the window.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from streamwatch.models.runtime import AutoencoderNet, TorchReconstructor
from streamwatch.models.training import TrainingConfig


class LstmNet(AutoencoderNet):
    """LSTM encoder -> last hidden state -> repeated across time -> LSTM decoder -> linear to channels."""

    def __init__(self, *, length: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.length = length
        self.encoder = nn.LSTM(channels, hidden, batch_first=True)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.output = nn.Linear(hidden, channels)

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        _, (last_hidden, _) = self.encoder(windows)
        latent: torch.Tensor = last_hidden[-1]
        return latent

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        repeated = latent.unsqueeze(1).expand(-1, self.length, -1)
        sequence, _ = self.decoder(repeated)
        windows: torch.Tensor = self.output(sequence)
        return windows

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())


class LstmAutoencoder(TorchReconstructor):
    """LSTM autoencoder reconstructor for windows (batch, length, channels)."""

    kind = "lstm"

    def __init__(
        self,
        *,
        length: int,
        channels: int,
        hidden: int = 32,
        training: TrainingConfig | None = None,
    ) -> None:
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.hidden = hidden
        super().__init__(length=length, channels=channels, training=training)

    @classmethod
    def default_training(cls) -> TrainingConfig:
        # An LSTM autoencoder first sits on a plateau where it outputs the mean; a larger step leaves it
        # within a few epochs (measured: 2e-3 could stall until early stopping on small data, 1e-2
        # oscillates once converged).
        return replace(super().default_training(), learning_rate=5e-3)

    def architecture(self) -> dict[str, Any]:
        return {"hidden": self.hidden}

    def _new_net(self) -> AutoencoderNet:
        return LstmNet(length=self.length, channels=self.channels, hidden=self.hidden)
