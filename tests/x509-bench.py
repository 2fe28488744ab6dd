#!/usr/bin/env python3
"""x509-bench.py - a pipe run's time with 5 and with 5,000 certificates in the X.509 store (issue 13's pipe floor).

Generates two stores (one root in ca/, N leaf certificates in certs/, one file each, sharing one EC key so that
generating is quick) and times `mimegate filter --stdout` S/MIME-encrypting a small message to one address of the
store: median of 20 runs after one warm-up run (which builds the address index). Needs python3-cryptography.

usage: x509-bench.py MIMEGATE [MIMEGATE-BEFORE]   (prints one line per binary and store size, and the ratio)
"""
import datetime, os, shutil, statistics, subprocess, sys, tempfile, time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MSG = b"From: a@example.org\r\nTo: user3@bench.example\r\nSubject: bench\r\n\r\nsmall message\r\n"


def make_store(top, count):
    now = datetime.datetime.now(datetime.timezone.utc)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench Root")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(root_key, hashes.SHA256()))
    store = os.path.join(top, f"store{count}")
    for sub in ("ca", "certs", "private"):
        os.makedirs(os.path.join(store, sub), mode=0o700)
    with open(os.path.join(store, "ca", "root.pem"), "wb") as f:
        f.write(root.public_bytes(serialization.Encoding.PEM))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    for i in range(count):
        addr = f"user{i}@bench.example"
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"user {i}")]))
                .issuer_name(root_name).public_key(leaf_key.public_key()).serial_number(1000 + i)
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=100 + i % 200))
                .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(addr)]), critical=False)
                .add_extension(x509.KeyUsage(False, False, False, False, True, False, False, False, False),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                .sign(root_key, hashes.SHA256()))
        with open(os.path.join(store, "certs", f"user{i}.pem"), "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
    conf = os.path.join(top, f"store{count}.conf")
    with open(conf, "w") as f:
        f.write(f"[gateway]\nx509-store = {store}\ngnupg-home = none\nlog = none\n[default]\nencrypt = required\n")
    return conf


def time_runs(mimegate, conf, runs=20):
    argv = [mimegate, "filter", "-c", conf, "--stdout", "-f", "a@example.org", "--", "user3@bench.example"]
    subprocess.run(argv, input=MSG, stdout=subprocess.DEVNULL, check=True)  # warm-up: builds the index
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, input=MSG, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    binaries = sys.argv[1:]
    if not binaries:
        sys.exit(__doc__)
    top = tempfile.mkdtemp(prefix="mg-x509-bench-")
    try:
        confs = {n: make_store(top, n) for n in (5, 5000)}
        time.sleep(2.5)  # as between changes: the index's stamp lists certs/ only in the 2 s after one
        for b in binaries:
            small, large = (time_runs(b, confs[n]) for n in (5, 5000))
            print(f"{b}: 5 certs {small * 1000:.1f} ms, 5000 certs {large * 1000:.1f} ms, ratio {large / small:.2f}x")
    finally:
        shutil.rmtree(top)


if __name__ == "__main__":
    main()
