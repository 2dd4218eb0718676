"""The `tm` command: the application and its shared options (`cli.app`), `tm data` (`cli.data`), features,
selection, training, the registry, regimes and RL (`cli.models`), backtests, the retrain, the demo and the entry
point (`cli.main`). Importing this package registers every command on `app`."""
from .main import app, main, retrain_command
