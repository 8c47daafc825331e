"""cxr_utils: a conditional GAN for chest X-rays (NORMAL vs PNEUMONIA) and an honest evaluation of its images."""

__version__ = "0.1.0"
