from __future__ import annotations

import pytest

from activemri.data import KSpaceGeometry, parse_header
from activemri.data.header import HeaderError, build_header

# The encoding part of a real fastMRI knee header (file1000001): 640x368 encoded, 320x320 recon.
FASTMRI_KNEE_HEADER = b"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <encoding>
    <encodedSpace><matrixSize><x>640</x><y>368</y><z>1</z></matrixSize></encodedSpace>
    <reconSpace><matrixSize><x>320</x><y>320</y><z>1</z></matrixSize></reconSpace>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>333</maximum><center>167</center>
      </kspace_encoding_step_1>
    </encodingLimits>
  </encoding>
</ismrmrdHeader>"""


def test_parse_fastmri_style_header():
    g = parse_header(FASTMRI_KNEE_HEADER)
    assert g.encoded_size == (640, 368) and g.recon_size == (320, 320)
    # padding_left = 368 // 2 - 167 = 17; padding_right = 17 + 333 + 1 = 351
    assert (g.padding_left, g.padding_right) == (17, 351)
    assert g.num_measured_columns == 334


@pytest.mark.parametrize(
    "geom",
    [
        KSpaceGeometry((640, 368), (320, 320), 17, 351),
        KSpaceGeometry((37, 31), (20, 20), 0, 31),
        KSpaceGeometry((40, 36), (32, 32), 3, 34),
    ],
)
def test_build_parse_round_trip(geom):
    assert parse_header(build_header(geom)) == geom


def test_header_errors():
    with pytest.raises(HeaderError, match="not valid XML"):
        parse_header(b"<oops")
    missing = FASTMRI_KNEE_HEADER.replace(b"<center>167</center>", b"")
    with pytest.raises(HeaderError, match="center"):
        parse_header(missing)
    outside = FASTMRI_KNEE_HEADER.replace(b"<maximum>333</maximum>", b"<maximum>400</maximum>")
    with pytest.raises(HeaderError, match="outside"):
        parse_header(outside)
