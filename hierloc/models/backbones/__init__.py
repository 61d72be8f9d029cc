"""Convolutional trunks: MobileNetV2 (any width, any cut point), VGG16 to conv5_3, ResNet-50 to block3."""

from .mobilenetv2 import MobileNetV2, make_divisible
from .resnet import ResNet50Block3
from .vgg import VGG16Conv5

__all__ = ["MobileNetV2", "VGG16Conv5", "ResNet50Block3", "make_divisible"]
