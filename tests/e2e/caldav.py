"""A real CalDAV server (Radicale) that invites are applied to in arrival order, as a
calendar client applies iTIP (RFC 5546): a REQUEST or CANCEL whose SEQUENCE is lower than the
stored event's is ignored; a REQUEST stores the event, a CANCEL stores it cancelled. Events
are read back through the server and parsed with vobject, a second parser beside icalendar."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import vobject

from devtools.sink import free_port
from tests.conftest import wait_for


class Radicale:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        # Any name and password pass with auth "none"; "authenticated" rights let it write anywhere.
        self.http = httpx.Client(base_url=self.base, timeout=10, auth=("tests", "tests"))
        self.calendars: set[str] = set()

    def start(self) -> Radicale:
        args = [sys.executable, "-m", "radicale", "--server-hosts", f"127.0.0.1:{self.port}"]
        args += ["--auth-type", "none", "--rights-type", "authenticated"]
        args += ["--storage-filesystem-folder", str(self.folder)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._up, 20, "Radicale to answer")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"radicale exited with {self.proc.returncode}")
        try:
            return self.http.request("OPTIONS", "/").status_code < 500
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.http.close()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def _calendar(self, address: str) -> str:
        path = f"/{quote(address)}/calendar/"
        if address not in self.calendars:
            self.http.request("MKCOL", f"/{quote(address)}/")
            made = self.http.request("MKCALENDAR", path)
            assert made.status_code in (201, 405), made.text
            self.calendars.add(address)
        return path

    def apply(self, address: str, ics: bytes) -> None:
        """Apply one iTIP message to the recipient's calendar, as a client would."""
        cal = vobject.readOne(ics.decode("utf-8"))
        method = str(cal.method.value)
        event = cal.vevent
        uid, sequence = str(event.uid.value), int(event.sequence.value)
        url = f"{self._calendar(address)}{quote(uid)}.ics"
        found = self.http.get(url)
        if found.status_code == 200:
            stored = vobject.readOne(found.text).vevent
            if int(stored.sequence.value) > sequence:
                return  # an older message than what the calendar holds
        if method == "CANCEL":
            if found.status_code != 200:
                return  # nothing to cancel
            event.status.value = "CANCELLED"
        del cal.method
        put = self.http.put(url, content=cal.serialize(), headers={"Content-Type": "text/calendar"})
        assert put.status_code in (201, 204), put.text

    def live(self, address: str) -> list[str]:
        """The UIDs of the events in the recipient's calendar that are not cancelled."""
        if address not in self.calendars:
            return []
        listing = self.http.get(self._calendar(address))
        assert listing.status_code == 200, listing.text
        if not listing.text.strip():
            return []
        cal = vobject.readOne(listing.text)
        events = cal.contents.get("vevent", [])
        return sorted(
            str(e.uid.value)
            for e in events
            if str(getattr(e, "status", None) and e.status.value) != "CANCELLED"
        )
