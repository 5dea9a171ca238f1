# stand-in for manage.py (run by the stand-in python, which is sh)
set -e
case "$1" in compilemessages)
	mkdir -p my_awesome_project/locale/fr/LC_MESSAGES
	echo "compiled with $DJANGO_SETTINGS_MODULE" > my_awesome_project/locale/fr/LC_MESSAGES/django.mo ;;
esac
