"""The ISMRMRD XML header of fastMRI files: what we read from it and how we write it.

fastMRI stores the header as the dataset ``ismrmrd_header`` (XML bytes, namespace
``http://www.ismrm.org/ISMRMRD``). From it we need the encoded k-space size, the
reconstruction size and the phase-encode encoding limits, which tell which k-space columns
were measured: ``[padding_left, padding_right)`` with
``padding_left = enc_W // 2 - center`` and ``padding_right = padding_left + maximum + 1``.
Columns outside that range are zero padding and are never actions.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

__all__ = ["ISMRMRD_NAMESPACE", "HeaderError", "KSpaceGeometry", "build_header", "parse_header"]

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"
_NS = {"ns": ISMRMRD_NAMESPACE}


class HeaderError(ValueError):
    """The ISMRMRD header is missing a field we need or is not valid XML."""


@dataclass(frozen=True)
class KSpaceGeometry:
    """Geometry of one fastMRI volume, as given by its ISMRMRD header.

    Attributes:
        encoded_size: ``(readout, phase_encode)`` size of the encoded k-space (``H, W``).
        recon_size: ``(h, w)`` of the reconstruction (the target image).
        padding_left: First measured phase-encode column.
        padding_right: One past the last measured phase-encode column.
    """

    encoded_size: tuple[int, int]
    recon_size: tuple[int, int]
    padding_left: int
    padding_right: int

    @property
    def num_measured_columns(self) -> int:
        """Number of phase-encode columns that were measured (not zero padding)."""
        return self.padding_right - self.padding_left


def _int(root: ET.Element, path: str) -> int:
    node = root.find(path, _NS)
    if node is None or node.text is None:
        readable = path.replace("ns:", "")
        raise HeaderError(f"ISMRMRD header has no {readable}")
    try:
        return int(float(node.text.strip()))
    except ValueError as exc:
        raise HeaderError(f"ISMRMRD header field {path!r} is not a number: {node.text!r}") from exc


def parse_header(xml: bytes | str) -> KSpaceGeometry:
    """Parse the fields activemri needs from an ISMRMRD XML header.

    Args:
        xml: The content of a fastMRI file's ``ismrmrd_header`` dataset.

    Returns:
        The volume's :class:`KSpaceGeometry`.

    Raises:
        HeaderError: If the XML is malformed or a required field is missing.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise HeaderError(f"ISMRMRD header is not valid XML: {exc}") from exc
    enc = "ns:encoding/ns:encodedSpace/ns:matrixSize"
    rec = "ns:encoding/ns:reconSpace/ns:matrixSize"
    lim = "ns:encoding/ns:encodingLimits/ns:kspace_encoding_step_1"
    enc_x, enc_y = _int(root, f"{enc}/ns:x"), _int(root, f"{enc}/ns:y")
    rec_x, rec_y = _int(root, f"{rec}/ns:x"), _int(root, f"{rec}/ns:y")
    center = _int(root, f"{lim}/ns:center")
    maximum = _int(root, f"{lim}/ns:maximum")
    padding_left = enc_y // 2 - center
    padding_right = padding_left + maximum + 1
    if not 0 <= padding_left < padding_right <= enc_y:
        raise HeaderError(
            f"encoding limits (center={center}, maximum={maximum}) give measured columns "
            f"[{padding_left}, {padding_right}) outside the encoded width {enc_y}"
        )
    return KSpaceGeometry((enc_x, enc_y), (rec_x, rec_y), padding_left, padding_right)


def build_header(geometry: KSpaceGeometry, fov_mm: tuple[float, float] = (280.0, 140.0)) -> str:
    """Write a minimal ISMRMRD header that :func:`parse_header` (and fastMRI) can read.

    Args:
        geometry: Sizes and measured columns to declare.
        fov_mm: Field of view ``(readout, phase_encode)`` in millimetres of the encoded space.

    Returns:
        The XML document as a string.
    """
    (enc_x, enc_y), (rec_x, rec_y) = geometry.encoded_size, geometry.recon_size
    center = enc_y // 2 - geometry.padding_left
    maximum = geometry.padding_right - geometry.padding_left - 1
    rec_fov = (fov_mm[0] * rec_x / enc_x, fov_mm[1] * rec_y / enc_y)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<ismrmrdHeader xmlns="{ISMRMRD_NAMESPACE}">\n'
        "  <encoding>\n"
        "    <encodedSpace>\n"
        f"      <matrixSize><x>{enc_x}</x><y>{enc_y}</y><z>1</z></matrixSize>\n"
        f"      <fieldOfView_mm><x>{fov_mm[0]:.1f}</x><y>{fov_mm[1]:.1f}</y><z>3.0</z>"
        "</fieldOfView_mm>\n"
        "    </encodedSpace>\n"
        "    <reconSpace>\n"
        f"      <matrixSize><x>{rec_x}</x><y>{rec_y}</y><z>1</z></matrixSize>\n"
        f"      <fieldOfView_mm><x>{rec_fov[0]:.1f}</x><y>{rec_fov[1]:.1f}</y><z>3.0</z>"
        "</fieldOfView_mm>\n"
        "    </reconSpace>\n"
        "    <trajectory>cartesian</trajectory>\n"
        "    <encodingLimits>\n"
        "      <kspace_encoding_step_1>"
        f"<minimum>0</minimum><maximum>{maximum}</maximum><center>{center}</center>"
        "</kspace_encoding_step_1>\n"
        "    </encodingLimits>\n"
        "  </encoding>\n"
        "</ismrmrdHeader>\n"
    )
