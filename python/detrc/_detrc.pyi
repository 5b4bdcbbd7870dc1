# The extension module (python/src/lib.rs). Private: use the functions of `detrc` instead,
# which check their arguments and document them.
from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Tuple

__version__: str
DEFAULT_TARGETS: str

def compile(
    path: Optional[PathLike[str]],
    data: Optional[bytes],
    label: str,
    options: Dict[str, Any],
) -> Tuple[Optional[bytes], str]: ...
def inspect(
    path: Optional[PathLike[str]],
    data: Optional[bytes],
    label: str,
    base_dir: Optional[PathLike[str]],
) -> str: ...
def build(model: PathLike[str], output: PathLike[str], options: Dict[str, Any]) -> str: ...
def run(
    model: PathLike[str],
    images: Sequence[PathLike[str]],
    output: PathLike[str],
    options: Dict[str, Any],
) -> str: ...
def passes() -> List[Tuple[str, str, bool, bool]]: ...
def cli(argv: Sequence[str]) -> int: ...
