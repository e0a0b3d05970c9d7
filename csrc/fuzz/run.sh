#!/usr/bin/env bash
# Build the DICOM fuzz target with AddressSanitizer + UBSan (g++: standalone mutation driver) and run it
# on pydicom's uncompressed and encapsulated test files. Usage: csrc/fuzz/run.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
ITER="${1:-200000}"
OUT="${TMPDIR:-/tmp}/cxrfast_fuzz_dicom"
g++ -std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all \
    -DCXRFAST_FUZZ_MAIN -I csrc csrc/fuzz/fuzz_dicom.cpp csrc/cpu/dicom.cpp csrc/cpu/jpeg_lossless.cpp -o "$OUT"
DATA="$(.venv/bin/python -c 'import os, pydicom.data as d; print(os.path.join(os.path.dirname(d.__file__), "test_files"))')"
SEEDS=("$DATA/MR_small.dcm" "$DATA/MR_small_implicit.dcm" "$DATA/MR_small_bigendian.dcm" "$DATA/rtdose.dcm"
       "$DATA/JPEG2000.dcm" "$DATA/MR_small_RLE.dcm" "$DATA/SC_rgb_small_odd_big_endian.dcm" "$DATA/CT_small.dcm"
       "$DATA/rtdose_rle.dcm" "$DATA/SC_rgb_rle_16bit_2frame.dcm" "$DATA/SC_rgb_jpeg_gdcm.dcm")
start=$(date +%s)
"$OUT" "$ITER" "${SEEDS[@]}"
echo "elapsed $(( $(date +%s) - start )) s"
