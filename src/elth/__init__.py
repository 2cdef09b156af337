"""elth: elastic lottery tickets."""
__version__ = "0.1.0"
