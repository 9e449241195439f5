"""``.. livemig-instance-keys::``: the per-instance keys, from the code.

Renders :data:`nova_livemig_ext.instance_policy.KEYS` as a definition list,
one entry per key with its full ``livemig_ext:`` name, so the documentation
cannot miss a key the code accepts.
"""

from docutils import nodes
from docutils.parsers.rst import Directive

from nova_livemig_ext import instance_policy


class InstanceKeysDirective(Directive):
    has_content = False

    def run(self):
        items = nodes.definition_list()
        for key in instance_policy.KEYS:
            name = instance_policy.PREFIX + key.name
            term = nodes.term()
            term += nodes.literal(name, name)
            definition = nodes.definition()
            definition += nodes.paragraph(key.help, key.help)
            item = nodes.definition_list_item()
            item += term
            item += definition
            items += item
        return [items]


def setup(app):
    app.add_directive('livemig-instance-keys', InstanceKeysDirective)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
