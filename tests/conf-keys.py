#!/usr/bin/env python3
"""conf-keys.py - every configuration key the code knows is documented, and nothing else is.

The keys come from the code itself: gateway_keys in gateway/settings.c ([gateway]), serve_keys in gateway/serve.c
([serve]), directory_keys in gateway/directory.c ([directory]) and policy_keys in gateway/policy.c (the policy groups). Each must be a term of mimegate.conf(5) in its
group's section (a line "*KEY* = ..." in gateway/man/mimegate.conf.5.scd), and each term there must be a key the code
knows; with --example FILE, each must also be in that example configuration, commented out ("#key = value"), in
its group.
Usage: conf-keys.py SRCDIR [--example FILE]"""
import re
import sys


def c_array(path, name):
    """the string literals of the C array NAME in PATH"""
    text = open(path, encoding="utf-8").read()
    m = re.search(r"\b" + re.escape(name) + r"\[\]\s*=\s*\{(.*?)\};", text, re.S)
    if not m:
        sys.exit(f"{path}: no array {name}")
    if name == "policy_keys":  # { "encrypt", encrypt_names }, ...: the first string of each pair
        return re.findall(r'\{\s*"([a-z0-9-]+)"\s*,', m.group(1))
    return re.findall(r'"([a-z0-9-]+)"', m.group(1))


def man_terms(path):
    """{section: [keys]} of the scdoc page: terms "*key* = ..." under "# THE [gateway] GROUP" and the like"""
    terms, section = {}, None
    for line in open(path, encoding="utf-8"):
        h = re.match(r"# THE \[(\w+)\] GROUP|# (POLICY)", line)
        if h:
            section = h.group(1) or "policy"
            terms[section] = []
        elif line.startswith("# "):
            section = None
        elif section:
            t = re.match(r"\*([a-z0-9-]+)\* =", line)
            if t:
                terms[section].append(t.group(1))
    return terms


def example_keys(path):
    """{group: [keys]} commented out in the example file ("#key = value" under "[group]" or "#[group]")"""
    keys, group = {}, None
    for line in open(path, encoding="utf-8"):
        g = re.match(r"\[([a-z]+)[^\]]*\]\s*$", line)
        if g:
            group = "policy" if g.group(1) in ("default", "domain", "address") else g.group(1)
            keys.setdefault(group, [])
            continue
        k = re.match(r"#([a-z0-9-]+) = ", line)
        if k and group:
            keys[group].append(k.group(1))
    return keys


def main():
    src = sys.argv[1]
    code = {
        "gateway": c_array(f"{src}/gateway/settings.c", "gateway_keys"),
        "serve": c_array(f"{src}/gateway/serve.c", "serve_keys"),
        "directory": c_array(f"{src}/gateway/directory.c", "directory_keys"),
        "policy": c_array(f"{src}/gateway/policy.c", "policy_keys"),
    }
    failed = False
    for group, keys in code.items():
        if len(keys) < 5:
            sys.exit(f"only {len(keys)} {group} keys read from the code: the extraction is broken")
    docs = {"mimegate.conf(5)": man_terms(f"{src}/gateway/man/mimegate.conf.5.scd")}
    if "--example" in sys.argv:
        path = sys.argv[sys.argv.index("--example") + 1]
        docs[path] = example_keys(path)
    for where, found in docs.items():
        for group, keys in code.items():
            have = found.get(group, [])
            for key in keys:
                if key not in have:
                    print(f"{where}: [{group}] {key} is not documented")
                    failed = True
            for key in have:
                if key not in keys:
                    print(f"{where}: [{group}] {key} is not a key the code knows")
                    failed = True
            if len(have) != len(set(have)):
                print(f"{where}: [{group}] a key is listed twice: {sorted(have)}")
                failed = True
        print(f"{where}: " + ", ".join(f"{g} {len(found.get(g, []))}/{len(k)}" for g, k in code.items()))
    sys.exit(1 if failed else 0)


main()
