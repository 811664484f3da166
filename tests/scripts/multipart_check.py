#!/usr/bin/env python3
"""Parses a multipart/form-data body with Python's strict `email` parser.

Usage: multipart_check.py BODY_FILE BOUNDARY

Prepends a Content-Type header, parses with policy HTTP and
raise_on_defect=True (any framing defect, such as a missing closing
boundary, raises), and prints one JSON object:
{"ok": true, "parts": [{"name", "filename", "content_type", "length", "sha256"}]}
or {"ok": false, "error": "..."}. Exits 0 either way; the caller asserts.
"""
import email.parser
import email.policy
import hashlib
import json
import sys


def main():
    path, boundary = sys.argv[1], sys.argv[2]
    with open(path, "rb") as f:
        body = f.read()
    head = ('Content-Type: multipart/form-data; boundary="%s"\r\n\r\n' % boundary).encode()
    policy = email.policy.HTTP.clone(raise_on_defect=True)
    try:
        msg = email.parser.BytesParser(policy=policy).parsebytes(head + body)
        if not msg.is_multipart():
            raise ValueError("not multipart")
        if msg.defects:
            raise ValueError("defects: %r" % msg.defects)
        parts = []
        for p in msg.iter_parts():
            if p.defects:
                raise ValueError("part defects: %r" % p.defects)
            if p.get_content_disposition() != "form-data":
                raise ValueError("disposition %r" % p.get_content_disposition())
            data = p.get_payload(decode=True)
            parts.append({
                "name": p.get_param("name", header="content-disposition"),
                "filename": p.get_filename(),
                # None when the part sent no Content-Type (email would default to text/plain).
                "content_type": p["content-type"] and p.get_content_type(),
                "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            })
        print(json.dumps({"ok": True, "parts": parts}))
    except Exception as e:  # report, the Rust test decides
        print(json.dumps({"ok": False, "error": "%s: %s" % (type(e).__name__, e)}))


main()
