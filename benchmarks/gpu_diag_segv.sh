#!/usr/bin/env bash
# Diagnosis of the segfault seen on the GPU machine (2026-12-04): load_radiographs(device="cuda") on a file
# that is not DICOM crashed in cxrfast._C.radiograph_prepare, inside a worker thread. Does it crash in the
# main thread too, with bytes or a path, and where (cuda-gdb backtrace)?
cd "$(dirname "${BASH_SOURCE[0]}")/.."
printf 'not a dicom file at all%.0s' {1..10} > /tmp/bad.dcm
cat > /tmp/segv_main.py <<'PY'
import faulthandler, sys; faulthandler.enable()
from cxrfast.io.radiograph import _prepare, _options, _defaults
from cxrfast import _C
opts = _options(16, **_defaults())
how = sys.argv[1]
if how == "read_dicom":
    import cxrfast.io as cio
    try: cio.read_dicom("/tmp/bad.dcm")
    except Exception as e: print("read_dicom ok:", type(e).__name__)
elif how == "main":
    try: _prepare("/tmp/bad.dcm", opts, 0)
    except Exception as e: print("main-thread ok:", type(e).__name__)
elif how == "direct":
    try: _C.radiograph_prepare(open("/tmp/bad.dcm", "rb").read(), 0, opts)
    except Exception as e: print("direct ok:", type(e).__name__, e)
elif how == "threads":
    from concurrent.futures import ThreadPoolExecutor
    def one(i):
        try: _prepare("/tmp/bad.dcm", opts, 0)
        except Exception as e: return type(e).__name__
    with ThreadPoolExecutor(4) as p: print("threads ok:", list(p.map(one, range(4))))
PY
for how in read_dicom direct main threads; do timeout 20 python /tmp/segv_main.py $how 2>&1 | head -12; echo "[$how exit $?]"; done
g++ --version | head -1; c++ --version | head -1; ldd cxrfast/_C*.so | grep -E "stdc|gcc_s"
command -v cuda-gdb && timeout 60 cuda-gdb -batch -ex run -ex bt -ex "info sharedlibrary" --args python /tmp/segv_main.py direct 2>&1 | grep -vE "^\[New Thread|^\[Thread" | head -60
