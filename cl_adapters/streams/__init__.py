"""Task streams: each function returns an Avalanche CLScenario with task labels."""

from cl_adapters.streams.base import split_by_class, task_stream
from cl_adapters.streams.digits import split_digits
from cl_adapters.streams.images import cifar100, image_folder
from cl_adapters.streams.mnist import load_mnist, permuted_mnist, split_mnist
from cl_adapters.streams.text import sentiment_domains, tokenize

__all__ = ["cifar100", "image_folder", "load_mnist", "permuted_mnist", "split_by_class", "split_digits",
           "sentiment_domains", "split_mnist", "task_stream", "tokenize"]
