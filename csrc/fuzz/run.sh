#!/usr/bin/env bash
# Build the DICOM fuzz target with AddressSanitizer + UBSan (g++: standalone mutation driver) and run it
# on pydicom's uncompressed, deflated and encapsulated test files plus the synthetic seeds of
# csrc/fuzz/make_seeds.py (LUT sequences, deflate, extended offset tables, frames found by their end markers, one-component JPEG lossless streams (long Huffman codes included)). Usage: csrc/fuzz/run.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
ITER="${1:-200000}"
OUT="${TMPDIR:-/tmp}/cxrfast_fuzz_dicom"
# zlib (the deflated syntax) when its header is there, as setup.py decides for the extension
ZLIB=()
if echo '#include <zlib.h>' | g++ -E -x c++ - >/dev/null 2>&1; then ZLIB=(-DCXRFAST_WITH_ZLIB); fi
g++ -std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all \
    -DCXRFAST_FUZZ_MAIN "${ZLIB[@]}" -I csrc csrc/fuzz/fuzz_dicom.cpp csrc/cpu/dicom.cpp csrc/cpu/jpeg_lossless.cpp \
    -o "$OUT" ${ZLIB:+-lz}
DATA="$(.venv/bin/python -c 'import os, pydicom.data as d; print(os.path.join(os.path.dirname(d.__file__), "test_files"))')"
GEN="$OUT.seeds"  # LUT sequences, deflate, extended offset tables, frames found by their end markers, one-component JPEG lossless streams (long Huffman codes included): csrc/fuzz/make_seeds.py
.venv/bin/python csrc/fuzz/make_seeds.py "$GEN"
SEEDS=("$DATA/MR_small.dcm" "$DATA/MR_small_implicit.dcm" "$DATA/MR_small_bigendian.dcm" "$DATA/rtdose.dcm"
       "$DATA/JPEG2000.dcm" "$DATA/MR_small_RLE.dcm" "$DATA/SC_rgb_small_odd_big_endian.dcm" "$DATA/CT_small.dcm"
       "$DATA/rtdose_rle.dcm" "$DATA/SC_rgb_rle_16bit_2frame.dcm" "$DATA/SC_rgb_jpeg_gdcm.dcm" "$DATA/image_dfl.dcm"
       "$GEN"/*.dcm)
start=$(date +%s)
"$OUT" "$ITER" "${SEEDS[@]}"
echo "elapsed $(( $(date +%s) - start )) s"
