"""imgnet-build: make an ImageNet-style image dataset from WordNet."""

from imgnet_build.errors import ImgnetError

__version__ = "0.1.0"
__all__ = ["ImgnetError", "__version__"]
