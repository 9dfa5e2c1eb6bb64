"""The component's entry module: exports least_conn.LeastConn as veer:picker/policy.

componentize-py (see build.sh) generates the ``wit_world`` bindings from
wit/picker.wit at build time and looks for the ``Policy`` class here.
"""

from least_conn import LeastConn
from veer_picker.export import export

Policy = export(LeastConn)
