__version__ = "0.1.0"

# Importing fastai (views, train, the CLIs) warns that `torch.jit.script` is deprecated, a FutureWarning
# about fastai's own code that a user of this package can do nothing about: silenced here, before any
# module of the package loads fastai.
import warnings
warnings.filterwarnings('ignore', message=r'`torch.jit.script` is deprecated', category=FutureWarning)
