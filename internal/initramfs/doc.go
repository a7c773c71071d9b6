// Package initramfs builds the initial RAM filesystem a box boots with.
//
// The archive is an uncompressed newc cpio ([Writer]): under software
// emulation the kernel unpacks it faster than it would decompress
// anything. [Build] puts the guest agent in it as /init, together with the
// kernel modules the guest needs ([DefaultModules], resolved with their
// dependencies by [ModuleOrder] from the kernel's modules.dep) and
// /etc/boxlite/modules, the order in which the agent loads them and the
// devices each is for (from modules.alias): the agent loads a driver only
// when the VM has its device, as udev would. Builds
// are cached by content hash.
//
// Archive layout:
//
//	/init                   the guest agent (0755)
//	/dev/console            character device 5:1, the console of /init
//	/dev /proc /sys /run /box /etc /etc/boxlite /lib /lib/modules, /tmp (1777)
//	/lib/modules/<name>.ko  each module, flat
//	/etc/boxlite/modules    one line per requested module: its files in load
//	                        order (dependencies first), then "when" and the
//	                        device patterns it serves, if any; "@late" before
//	                        those loaded after the agent serves
package initramfs
