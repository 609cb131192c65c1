"""A 1-D convolutional autoencoder: three stride-2 convolutions down to a narrow latent, three back up.

The latent is (length/8, latent_channels): it keeps coarse position (so a spike or a step can be placed) but
too few numbers to copy the input, so only shapes seen in training come back out. Windows of any length
work: the network pads the end up to a multiple of 8 and crops its output to the input length.

Layout matters for speed on CPU. Windows arrive as (batch, length, channels), which is exactly the memory
layout of a channels-last 2-D image of height 1, so every convolution runs as a Conv2d with a (1, k) kernel
on a zero-copy channels-last view: oneDNN's fastest path, with no transposes in between. Upsampling is a
sub-pixel convolution (one convolution computes both output phases, which are then interleaved by a free
reshape): the same function as a stride-2 transposed convolution, measured about 4x faster here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from streamwatch.models.runtime import AutoencoderNet, TorchReconstructor
from streamwatch.models.training import TrainingConfig

# Three stride-2 stages halve the length three times.
_DOWNSAMPLING = 8
# Each output phase of an upsampling stage sees three coarse positions, i.e. about six fine samples.
_UPSAMPLING_KERNEL = 3


def _as_image(windows: torch.Tensor) -> torch.Tensor:
    """(batch, length, channels) -> the same memory viewed as a channels-last (batch, channels, 1, length)."""
    batch, length, channels = windows.shape
    return windows.reshape(batch, 1, length, channels).permute(0, 3, 1, 2)


def _as_windows(image: torch.Tensor, length: int) -> torch.Tensor:
    """Channels-last (batch, channels, 1, positions) -> windows (batch, length, ...) over the same memory.

    With length == positions each position keeps its channels; with length == 2 * positions each position's
    channels split into two consecutive samples (the sub-pixel interleave).
    """
    # A channels-last image lies in memory as (batch, 1, positions, channels), so the reshape is a view.
    return image.permute(0, 2, 3, 1).reshape(image.shape[0], length, -1)


class StridedConv(nn.Module):
    """Halve the length: (batch, length, in) -> (batch, length/2, out); length must be even."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, (1, kernel_size), stride=(1, 2), padding=(0, kernel_size // 2)
        )

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return _as_windows(self.conv(_as_image(windows)), windows.shape[1] // 2)


class SubPixelUpsample(nn.Module):
    """Double the length: (batch, length, in) -> (batch, 2*length, out), a stride-2 transposed convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, 2 * out_channels, (1, _UPSAMPLING_KERNEL), padding=(0, _UPSAMPLING_KERNEL // 2)
        )

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        # Channels [r*out, (r+1)*out) hold output phase r; the reshape interleaves the phases in time.
        return _as_windows(self.conv(_as_image(windows)), 2 * windows.shape[1])


class ConvNet(AutoencoderNet):
    """Strided-convolution encoder and a sub-pixel decoder mirrored on it, GELU between layers."""

    def __init__(
        self, *, length: int, channels: int, width: int, latent_channels: int, kernel_size: int
    ) -> None:
        super().__init__()
        self.length = length
        self.padded_length = -(-length // _DOWNSAMPLING) * _DOWNSAMPLING
        self.encoder = nn.Sequential(
            StridedConv(channels, width, kernel_size),
            nn.GELU(),
            StridedConv(width, 2 * width, kernel_size),
            nn.GELU(),
            StridedConv(2 * width, latent_channels, kernel_size),
        )
        self.decoder = nn.Sequential(
            SubPixelUpsample(latent_channels, 2 * width),
            nn.GELU(),
            SubPixelUpsample(2 * width, width),
            nn.GELU(),
            SubPixelUpsample(width, channels),
        )

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        padding = self.padded_length - self.length
        if padding:
            # Repeating the last sample adds no edge that the decoder would have to learn to draw.
            windows = torch.cat([windows, windows[:, -1:, :].expand(-1, padding, -1)], dim=1)
        latent: torch.Tensor = self.encoder(windows.contiguous())
        return latent

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        windows: torch.Tensor = self.decoder(latent.contiguous())
        return windows[:, : self.length, :]

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())


def default_width(channels: int) -> int:
    """Enough filters to mix every channel, yet cheap for the common few-channel stream."""
    return min(64, max(16, 2 * channels))


def default_latent_channels(channels: int) -> int:
    """Latent numbers per 8 samples: at least 2 (phase and amplitude of a rhythm), at most 16."""
    return min(16, max(2, channels))


class ConvAutoencoder(TorchReconstructor):
    """Convolutional autoencoder reconstructor for windows (batch, length, channels)."""

    kind = "conv"

    def __init__(
        self,
        *,
        length: int,
        channels: int,
        width: int | None = None,
        latent_channels: int | None = None,
        kernel_size: int = 5,
        training: TrainingConfig | None = None,
    ) -> None:
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")
        self.width = default_width(channels) if width is None else width
        self.latent_channels = (
            default_latent_channels(channels) if latent_channels is None else latent_channels
        )
        if self.width < 1 or self.latent_channels < 1:
            raise ValueError("width and latent_channels must be >= 1")
        self.kernel_size = kernel_size
        super().__init__(length=length, channels=channels, training=training)

    def architecture(self) -> dict[str, Any]:
        return {"width": self.width, "latent_channels": self.latent_channels, "kernel_size": self.kernel_size}

    def _new_net(self) -> AutoencoderNet:
        return ConvNet(
            length=self.length,
            channels=self.channels,
            width=self.width,
            latent_channels=self.latent_channels,
            kernel_size=self.kernel_size,
        )
