"""``headstart push``: a run's model bundle, with its model card, to the Hugging Face hub.

The bundle's network, description and card (``model.safetensors``, or the ``model.onnx`` of
an exported bundle, ``headstart.json``, ``README.md``) are uploaded as they are on disk, so
``headstart.load`` reads a downloaded copy as it reads the original. Not ``trained_on.txt``:
the content hashes of the training images would let anyone test whether a given image was
trained on (``evaluate`` of a downloaded copy then cannot leave training images out, and says
so). Without a network, in offline mode, or
without the right to write to the repository, it says which in one line.
"""

from __future__ import annotations

import socket
from pathlib import Path

from .bundle import META, RUNTIMES, bundle_folder, describe
from .errors import HeadstartError
from .report.card import CARD, write_card

__all__ = ["UPLOADED", "push"]

#: The files of a bundle that go to the hub.
UPLOADED = (*RUNTIMES.values(), META, CARD)  # the network in whichever runtime it is


def push(run: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload the model bundle of ``run`` (a run folder or its ``model/`` folder) to the hub
    repository ``repo_id`` (``user/name``; created when absent); the URL of the commit.

    ``token``: a Hugging Face token with write access (default: the one ``hf auth login``
    saved, or ``HF_TOKEN``). The model card is written first where the bundle has none.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

    bundle = bundle_folder(run)
    task = describe(bundle).task
    if task != "classification":
        raise HeadstartError(f"{run} is a {task} model: push is built for classifiers so far")
    if not (bundle / CARD).exists() and (bundle.parent / "summary.json").exists():
        write_card(bundle.parent)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            folder_path=bundle,
            repo_id=repo_id,
            repo_type="model",
            allow_patterns=list(UPLOADED),
            commit_message=f"headstart push of {bundle.resolve().parent.name}",
        )
    except OfflineModeIsEnabled:
        raise HeadstartError(
            "cannot push: the Hugging Face hub is in offline mode (HF_HUB_OFFLINE is set); "
            "unset it on a machine with a network"
        ) from None
    except HFValidationError as error:
        raise HeadstartError(f"repo_id={repo_id!r}: {error}") from None
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status in (401, 403):
            raise HeadstartError(
                f"the hub refused to write to {repo_id} (HTTP {status}): log in with "
                "`hf auth login`, or pass a token with write access"
            ) from None
        raise HeadstartError(f"the hub refused the upload to {repo_id}: {error}") from None
    except Exception as error:
        if not _unreachable(error):
            raise
        raise HeadstartError(
            f"cannot reach the Hugging Face hub at {api.endpoint} ({error}): no network? "
            "The bundle is unchanged; push again when the hub can be reached"
        ) from None
    return str(getattr(commit, "commit_url", commit))


def _unreachable(error: Exception) -> bool:
    """Whether ``error`` says the hub could not be reached (a refused or failed connection,
    a name that does not resolve, a timeout), whichever HTTP library raised it."""
    names = {kind.__name__ for kind in type(error).__mro__}
    network = (ConnectionError, TimeoutError, socket.gaierror)
    return isinstance(error, network) or "TransportError" in names
