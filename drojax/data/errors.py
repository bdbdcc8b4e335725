"""The errors raised when a dataset cannot be found locally or a data file is unusable."""


class DataError(ValueError):
  """A data file exists but cannot be used (not an archive, wrong keys, dtype or shape, empty,
  labels outside the classes); the message starts with the file's path.

  CLIs print ``str(error)`` as one line and exit with status 2 (the user chose the file).
  """


class DataNotFoundError(FileNotFoundError):
  """A dataset is not available offline; the message says where we looked and how to supply it.

  CLIs print ``str(error)`` as one line and exit with status 2.
  """

  def __init__(self, dataset: str, looked: list[str] | tuple[str, ...], how: str):
    self.dataset = dataset
    self.looked = list(looked)
    self.how = how
    where = "; ".join(self.looked) if self.looked else "nowhere"
    super().__init__(f"dataset '{dataset}' not found (looked in: {where}). {how}")
