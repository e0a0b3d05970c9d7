"""Thin nn.Modules over cxrfast.ops: they hold hyper-parameters (and CLIP's learnable temperature)."""

from cxrfast.nn.losses import ContrastiveLoss, LocalContrastiveLoss, LocalTripletLoss, LovtLocalLoss, TripletLoss

__all__ = ["ContrastiveLoss", "LocalContrastiveLoss", "LocalTripletLoss", "LovtLocalLoss", "TripletLoss"]


def __dir__():
    return list(__all__)
