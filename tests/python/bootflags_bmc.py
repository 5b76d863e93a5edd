"""A BMC that keeps the boot flags it is sent, for the test of `bootdev --persistent/--uefi`.

OpenIPMI's ipmi_sim keeps only the boot device of a Set System Boot Options (parameter 5) and
answers every read with the flags byte zero; pyghmi's server (under VirtualBMC) answers with
"valid, next boot only, legacy" whatever was set. A real BMC keeps the five data bytes
(IPMI v2.0 section 28.12, table 28-14). This one does, on pyghmi's RMCP+ server: ipmitool
and Ferric talk to it over lanplus, and `chassis bootparam get 5` decodes what was stored.

The chassis state (power, the stored flags in hex, how many sets) is written to a JSON file
after each change, as the lab's chassis program does for ipmi_sim.

Not emulated: the BMC clearing the valid bit 60 s after a set that no restart follows, and
parameter 3 (which bit-clearing events apply). Neither is what the test checks.

    python bootflags_bmc.py --port P --user U --password-file F --state S
"""

import argparse
import json
import os

import pyghmi.ipmi.bmc as bmc

BOOT_FLAGS = 5
COMPLETION_LENGTH_INVALID = 0xC7
COMPLETION_PARAMETER_NOT_SUPPORTED = 0x80


class BootFlagsBmc(bmc.Bmc):
    def __init__(self, authdata, port, state_path):
        super().__init__(authdata, port=port, address="127.0.0.1")
        self.state_path = state_path
        self.power = "off"
        # Never set: "boot flags invalid", no override (table 28-14 byte 1 bit 7 clear).
        self.flags = [0, 0, 0, 0, 0]
        self.sets = 0
        self.save()

    def save(self):
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(
                {
                    "power": self.power,
                    "boot_flags": bytes(self.flags).hex(),
                    "sets": self.sets,
                },
                f,
            )
        os.replace(tmp, self.state_path)

    def get_power_state(self):
        return self.power

    def power_on(self):
        self.power = "on"
        self.save()

    def power_off(self):
        self.power = "off"
        self.save()

    def power_shutdown(self):
        self.power_off()

    def power_cycle(self):
        self.power = "on"
        self.save()

    def power_reset(self):
        self.save()

    def get_system_boot_options(self, request, session):
        selector = request["data"][0] & 0x7F
        if selector != BOOT_FLAGS:
            return session.send_ipmi_response(code=COMPLETION_PARAMETER_NOT_SUPPORTED)
        # Parameter version 1, the selector, then the stored data.
        session.send_ipmi_response(data=[1, BOOT_FLAGS] + self.flags)

    def set_system_boot_options(self, request, session):
        data = request["data"]
        selector = data[0] & 0x7F
        if selector in (0, 3, 4):
            # Set-in-progress, valid-bit clearing, boot info acknowledge: accepted, not kept.
            return session.send_ipmi_response()
        if selector != BOOT_FLAGS:
            return session.send_ipmi_response(code=COMPLETION_PARAMETER_NOT_SUPPORTED)
        if len(data) != 6:
            return session.send_ipmi_response(code=COMPLETION_LENGTH_INVALID)
        self.flags = list(data[1:6])
        self.sets += 1
        self.save()
        session.send_ipmi_response()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--state", required=True)
    a = p.parse_args()
    with open(a.password_file) as f:
        password = f.read().strip()
    BootFlagsBmc({a.user: password}, a.port, a.state).listen()


if __name__ == "__main__":
    main()
