"""IVR dialogue gateway: the VoiceNavigator dialogue API and PBX front doors."""

__version__ = "0.1.0"
