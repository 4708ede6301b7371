"""boto3 client creation and the translation of AWS failures into one-line CloudErrors.

Credentials come only from boto3's standard chain (environment, profile, SSO, instance role);
kprov never reads, prints or stores them. `AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_EC2`, `AWS_PROFILE`
and `AWS_REGION`/`AWS_DEFAULT_REGION` are honoured by boto3 itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions as bce
import botocore.loaders
import botocore.session
from botocore.config import Config

from provisioner.errors import CloudError
from provisioner.providers.ec2_config import Ec2Config

log = logging.getLogger(__name__)


def _client_config() -> Config:
    # Standard retries unless the user chose their own (AWS_MAX_ATTEMPTS / AWS_RETRY_MODE / profile).
    user_retries = any(os.environ.get(v) for v in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"))
    return Config(
        retries=None if user_retries else {"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
        user_agent_extra="kprov",
    )


CREDENTIALS_HINT = (
    "configure AWS credentials the standard way: AWS_PROFILE (or ec2.profile), "
    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, `aws sso login`, or an instance role"
)
PERMISSIONS_HINT = "the credentials lack an EC2 permission; docs/ec2.md lists the IAM actions kprov needs"
QUOTA_HINT = (
    "an AWS service quota was hit: lower the counts / ssh_cidr entries, pick another instance "
    "type or region, or request a quota increase in the Service Quotas console"
)
AMI_HINT = "check ec2.ami: the id must exist in this region, or use {owner, name} / debian-12 / ubuntu-24.04"

# Exact AWS error codes -> hint.
_CODE_HINTS = {
    "AuthFailure": CREDENTIALS_HINT,
    "InvalidClientTokenId": CREDENTIALS_HINT,
    "SignatureDoesNotMatch": CREDENTIALS_HINT,
    "UnrecognizedClientException": CREDENTIALS_HINT,
    "ExpiredToken": "the session token expired: refresh your credentials (e.g. `aws sso login`)",
    "RequestExpired": "the request expired: check the clock of this machine",
    "UnauthorizedOperation": PERMISSIONS_HINT,
    "AccessDenied": PERMISSIONS_HINT,
    "AccessDeniedException": PERMISSIONS_HINT,
    "OptInRequired": "the account is not subscribed to this service or AMI (accept the AMI's terms in AWS Marketplace)",
    "InvalidAMIID.NotFound": AMI_HINT,
    "InvalidAMIID.Malformed": AMI_HINT,
    "InvalidAMIID.Unavailable": AMI_HINT,
    "InvalidInstanceType": "check ec2.control_plane/workers.instance_type: it must be offered in this region and AZ",
    "Unsupported": "the instance type is not offered in this availability zone: pick another type or subnet",
    "InsufficientInstanceCapacity": "AWS has no capacity for this instance type now: retry later or pick another type/AZ",
    "InvalidSubnetID.NotFound": "check ec2.subnet_id: it must exist in ec2.region",
    "InvalidVpcID.NotFound": "check ec2.vpc_id: it must exist in ec2.region",
    "InvalidKeyPair.NotFound": "set ec2.public_key so kprov can import the key pair, or create ec2.key_name in this region",
    "InvalidKeyPair.Duplicate": "a key pair with this name exists already: set ec2.key_name to another name",
    "InvalidParameterValue": "a value in the ec2: section was rejected by AWS; see the message",
    "InvalidParameterCombination": "a combination of ec2: settings was rejected by AWS; see the message",
    "DependencyViolation": "a resource is still in use (instances still shutting down?): run the command again",
}


# The service models are large JSON files: load them once per process, not once per client.
# (Credentials and settings are still resolved afresh for every client.)
_LOADER = botocore.loaders.create_loader()


def ec2_client(config: Ec2Config) -> Any:
    """An EC2 client from the standard credential chain for the configured region/profile."""
    with aws_errors("connect to EC2"):
        core = botocore.session.Session()
        core.register_component("data_loader", _LOADER)
        session = boto3.session.Session(botocore_session=core, profile_name=config.profile, region_name=config.region)
        if session.region_name is None:
            raise CloudError(
                "no AWS region configured",
                hint="set ec2.region in the inventory, or AWS_REGION / a profile with a region",
            )
        client = session.client("ec2", config=_client_config())
    log.debug("EC2 endpoint %s (region %s)", client.meta.endpoint_url, client.meta.region_name)
    return client


@contextlib.contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Turn any botocore failure inside the block into a one-line CloudError with a hint."""
    try:
        yield
    except CloudError:
        raise
    except bce.ClientError as exc:
        raise translate_client_error(exc, action) from None
    except (bce.NoCredentialsError, bce.PartialCredentialsError, bce.CredentialRetrievalError):
        raise CloudError(f"cannot {action}: no usable AWS credentials found", hint=CREDENTIALS_HINT) from None
    except (bce.TokenRetrievalError, bce.SSOTokenLoadError, bce.UnauthorizedSSOTokenError):
        raise CloudError(f"cannot {action}: the AWS SSO session expired", hint="run `aws sso login`") from None
    except bce.ProfileNotFound as exc:
        raise CloudError(
            f"cannot {action}: {exc}", hint="set ec2.profile / AWS_PROFILE to a profile in ~/.aws/config"
        ) from None
    except bce.NoRegionError:
        raise CloudError(f"cannot {action}: no AWS region configured", hint="set ec2.region in the inventory") from None
    except (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError) as exc:
        raise CloudError(
            f"cannot {action}: EC2 endpoint unreachable ({_one_line(str(exc))})",
            hint="check the network, or AWS_ENDPOINT_URL if you use a local endpoint",
        ) from None
    except bce.WaiterError as exc:
        reason = _one_line(getattr(exc, "reason", "") or str(exc))
        last = getattr(exc, "last_response", None) or {}
        if "Error" in last:
            code = last["Error"].get("Code", "")
            raise CloudError(
                f"cannot {action}: {code}: {_one_line(last['Error'].get('Message', ''))}", hint=_CODE_HINTS.get(code)
            ) from None
        raise CloudError(
            f"cannot {action}: {reason}", hint="run the command again; it resumes where it stopped"
        ) from None
    except bce.ParamValidationError as exc:
        raise CloudError(
            f"cannot {action}: invalid request: {_one_line(str(exc))}", hint="check the ec2: section"
        ) from None
    except bce.BotoCoreError as exc:
        raise CloudError(f"cannot {action}: {_one_line(str(exc))}") from None


def translate_client_error(exc: bce.ClientError, action: str) -> CloudError:
    """One readable line for an AWS API error: what failed, AWS's code and message, a hint."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = _one_line(str(error.get("Message", "")))
    hint = _CODE_HINTS.get(code) or _CODE_HINTS.get(code.split(".")[0])
    if hint is None and ("LimitExceeded" in code or code.endswith("QuotaExceeded")):
        hint = QUOTA_HINT
    if hint is None and "AccessDenied" in code:
        hint = PERMISSIONS_HINT
    cloud = CloudError(f"cannot {action}: {code}: {message}" if message else f"cannot {action}: {code}", hint=hint)
    cloud.aws_code = code  # type: ignore[attr-defined]
    return cloud


def error_code(exc: BaseException) -> str | None:
    """AWS error code of a ClientError or a translated CloudError, else None."""
    if isinstance(exc, bce.ClientError):
        return str(exc.response.get("Error", {}).get("Code"))
    return getattr(exc, "aws_code", None)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
